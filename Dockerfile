# Production image for every tokenmeter role (worker, loader, dashboard, topics); the role is the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tokenmeter tokenmeter
COPY app app
COPY collectors collectors
COPY streams streams
COPY warehouse warehouse
COPY dashboards dashboards
RUN pip install --no-cache-dir . && useradd --system tokenmeter && mkdir /data && chown tokenmeter /data
USER tokenmeter
ENV TOKENMETER_DATA_DIR=/data TOKENMETER_HOST=0.0.0.0
ENTRYPOINT ["tokenmeter"]
