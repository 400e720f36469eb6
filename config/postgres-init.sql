-- docker-compose profile `postgres`: one database per pusher (their tables have the same
-- names, so the two pushers never share one database).
CREATE DATABASE cdr;
CREATE DATABASE status;
