"""One runner per system under test (see base.py for the contract): Trellis offline (trellis.py), any
OpenAI-compatible server over HTTP (openai_http.py: Trellis' and llama.cpp's servers), transformers
(hf.py) and llama-cpp-python (llamacpp.py). Engine imports happen inside `start()`, in the worker process.
"""
