# agentsite: one image for web, workers, beat, Flower and migrations (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN groupadd --system agentsite \
    && useradd --system --gid agentsite --home-dir /app --no-create-home --shell /usr/sbin/nologin agentsite

# Requirements first, so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

# The code stays owned by root (read-only to the app); only var/ (static files) and /data (pipelines' files,
# the agent-data volume) are the app user's.
COPY . .
RUN install -d -o agentsite -g agentsite /app/var /data

USER agentsite

# Without SECRET_KEY the settings would generate var/secret_key and bake it into the image;
# this dummy exists only for this RUN line. The real key comes from the environment at runtime.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret python manage.py collectstatic --noinput --verbosity 0

EXPOSE 8000

CMD ["gunicorn", "agentsite.wsgi:application", "--bind", "0.0.0.0:8000"]
