"""/train: members teach a model their own subject or style (a Dreambooth LoRA) on the bot's GPU."""
