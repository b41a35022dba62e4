"""Datasets in PASCAL VOC layout: the VOC 2012 / SBD reader, the built-in dataset, transforms, checks."""
