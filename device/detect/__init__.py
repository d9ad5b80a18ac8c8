"""Detection: model contract, preprocessing, detector backends, shot event tracking."""
