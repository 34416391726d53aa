"""Fine-tuning on the pretraining path: SFT (full or LoRA), reward models and DPO, each a Lightning
module that the pretraining launcher (:mod:`training.launcher`) runs on Ray Train."""
