"""Standard performance figures (``monitor bench``) and the synthetic books they use."""
