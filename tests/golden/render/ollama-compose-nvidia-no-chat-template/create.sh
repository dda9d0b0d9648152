#!/bin/sh
# Rendered by deployer 0.1.0: create the Ollama model llama-3-1-8b-instruct from the GGUF once the server is healthy.
# Ollama copies the weights into its own store: this needs 6.15 GiB more disk.
set -eu
cd "$(dirname "$0")"
docker-compose exec -T ollama ollama create llama-3-1-8b-instruct -f /deployer/Modelfile
