"""The marketer pages (server-rendered): experiments list, create/start/stop forms, the report with charts."""
