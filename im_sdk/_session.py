"""Token state shared by both clients."""

from __future__ import annotations

from collections.abc import Callable

from im_schema.rest import Session

__all__ = ["SessionState"]


class SessionState:
    """The current tokens; ``on_session`` hears about every new pair."""

    def __init__(
        self,
        access_token: str | None,
        refresh_token: str | None,
        on_session: Callable[[Session], None] | None,
    ) -> None:
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.session: Session | None = None
        self._on_session = on_session

    def update(self, session: Session) -> None:
        """Adopt a new session (after login or refresh)."""
        self.session = session
        self.access_token = session.access_token
        self.refresh_token = session.refresh_token
        if self._on_session is not None:
            self._on_session(session)

    def clear(self) -> None:
        """Forget the tokens (after logout)."""
        self.session = None
        self.access_token = None
        self.refresh_token = None

    def headers(self) -> dict[str, str]:
        """The Authorization header, if logged in."""
        return {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}
