"""Where events come from: recorded files (replay) and Kafka (the daemon)."""
