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

# Without SECRET_KEY, AGENTS_ENCRYPTION_KEYS and AGENTS_MESSAGE_KEY the settings would generate them under var/
# and bake them into the image; these dummies exist only for this RUN line. The real keys come from the
# environment at runtime.
RUN SECRET_KEY=collectstatic-build-only-not-a-secret AGENTS_ENCRYPTION_KEYS=build-only-not-a-key \
    AGENTS_MESSAGE_KEY=build-only-not-a-key python manage.py collectstatic --noinput --verbosity 0

EXPOSE 8000

CMD ["gunicorn", "agentsite.wsgi:application", "--bind", "0.0.0.0:8000"]
