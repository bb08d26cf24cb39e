"""img2img runner: a long-lived diffusers process speaking length-prefixed frames on stdin/stdout."""
