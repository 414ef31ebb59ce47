"""Mail intake: parse raw messages, screen out auto-generated mail, thread, classify and open."""
