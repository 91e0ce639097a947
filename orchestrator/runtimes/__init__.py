"""Where the actors run: threads in this process, supervised local processes, or elsewhere (watched)."""
