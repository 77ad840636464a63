# One image for web and worker. torch is pinned first: on Linux x86-64 this pin is the CUDA build.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY web ./web
COPY worker ./worker
COPY migrations ./migrations
RUN pip install .
RUN useradd --create-home genqueue && mkdir -p /data /hf-cache && chown genqueue /data /hf-cache
USER genqueue
EXPOSE 5000
CMD ["genqueue", "web", "--host", "0.0.0.0"]
