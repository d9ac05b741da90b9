"""fishersym."""
