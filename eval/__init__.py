"""Metrics: segmentation mIoU from one confusion matrix, classification AP/mAP/AUC/top-k/KS."""
