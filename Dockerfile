# The semrec API (and CLI) in one image. CPU-only torch keeps it small; the MiniLM text
# encoder ships inside a pip package, so the image encodes text with no download.
#   docker build -t semrec .
#   docker run -p 8000:8000 -v semrec-data:/data semrec            # embedded Qdrant Edge
#   docker run -e SEMREC_STORE=http://qdrant:6333 ... semrec        # a Qdrant server
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SEMREC_HOME=/data HF_HOME=/data/.cache/huggingface

WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2"
COPY pyproject.toml README.md ./
COPY semrec ./semrec
COPY ingest ./ingest
RUN pip install . fastapi "uvicorn[standard]" httpx
COPY fixtures ./fixtures

RUN useradd --create-home --uid 1000 semrec && mkdir -p /data && chown semrec /data
USER semrec
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health', timeout=2)"
CMD ["semrec", "serve", "--host", "0.0.0.0", "--port", "8000"]
