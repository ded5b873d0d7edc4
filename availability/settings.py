"""Configuration from the environment (and flags, which override it).

| variable                          | default   | meaning                                             |
|-----------------------------------|-----------|-----------------------------------------------------|
| ``REDIS_URL``                     | unset     | ``redis://``/``rediss://`` URL, ACL user allowed    |
| ``DATABASE_URL``                  | unset     | ``postgresql://`` URL                               |
| ``AVAILABILITY_PREFIX``           | ``av``    | key prefix of the deployment                        |
| ``AVAILABILITY_SHARDS``           | ``16``    | shard count, fixed for a deployment                 |
| ``AVAILABILITY_HOME_BOOKMAKER``   | ``betpawa`` | rows of this bookmaker go to ``market_odds``      |
| ``AVAILABILITY_REDIS_CLUSTER``    | ``false`` | connect with the Redis Cluster client               |
| ``AVAILABILITY_LOG_LEVEL``        | ``INFO``  | structlog level                                     |
| ``AVAILABILITY_LOG_JSON``         | ``false`` | JSON log lines instead of console ones              |
| ``AVAILABILITY_RETENTION``        | ``14d``   | events whose kickoff is older are pruned / not warmed (``14d``, ``36h``, ``90m``) |
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from availability.keys import DEFAULT_PREFIX, DEFAULT_SHARDS, KeySchema


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AVAILABILITY_", extra="ignore")

    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    prefix: str = DEFAULT_PREFIX
    shards: int = DEFAULT_SHARDS
    home_bookmaker: str = "betpawa"
    redis_cluster: bool = False
    log_level: str = "INFO"
    log_json: bool = False
    retention: str = "14d"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        KeySchema(value, DEFAULT_SHARDS)
        return value

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int) -> int:
        KeySchema(DEFAULT_PREFIX, value)
        return value

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        from availability.retention import parse_duration

        parse_duration(value, "AVAILABILITY_RETENTION")
        return value

    @field_validator("redis_url", "database_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None
