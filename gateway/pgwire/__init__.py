"""The Postgres wire protocol front end: codec (messages, types), session logic
(session, scram) and transport (server), kept apart."""
