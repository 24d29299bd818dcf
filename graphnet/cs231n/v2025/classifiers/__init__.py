"""The course's classifiers, 2025 edition: transformer (CaptioningTransformer with the
2025 decoder layers, VisionTransformer)."""
