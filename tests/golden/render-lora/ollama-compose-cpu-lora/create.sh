#!/bin/sh
# Rendered by deployer 0.1.0: create the Ollama model gemma-3-270m-it from the GGUF once the server is healthy.
# Ollama copies the weights into its own store: this needs 0.24 GiB more disk.
set -eu
cd "$(dirname "$0")"
docker-compose exec -T ollama ollama create gemma-3-270m-it -f /deployer/Modelfile
