"""LSAP inside other training frameworks (imported on demand; each needs its framework).

- `lsap.integrations.transformers`: `LSAPTrainer`, a Hugging Face `transformers.Trainer`.
"""
