"""Text to token shards: corpora, tokenizers, memory-mapped arrays and the sequence loader."""
