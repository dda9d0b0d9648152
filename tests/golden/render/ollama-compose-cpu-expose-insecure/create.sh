#!/bin/sh
# Rendered by deployer 0.1.0: create the Ollama model qwen2-5-7b-instruct from the GGUF once the server is healthy.
# Ollama copies the weights into its own store: this needs 5.82 GiB more disk.
set -eu
cd "$(dirname "$0")"
docker-compose exec -T ollama ollama create qwen2-5-7b-instruct -f /deployer/Modelfile
