"""Attention maps (Grad-CAM, Grad-CAM++, channel-weighted; docs/method.md §1), used by stage 1
(ICASC training) and stage 2 (cue extraction) alike."""
