"""The frozen surrogate: loading it, online target sources and the offline target store."""
