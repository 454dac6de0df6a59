"""Training and evaluation shared by every head: the loop, checkpoints, schedules, distributed setup."""
