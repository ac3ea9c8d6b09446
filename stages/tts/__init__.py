"""stages/tts package."""
