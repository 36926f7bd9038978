"""Dataset folders to training images: loading, image decoding, buckets, the report, caption augmentation."""
