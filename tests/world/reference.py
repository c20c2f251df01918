"""A slow, plain-Python Othello written independently of uncover.data.othello (lists and loops)."""
from __future__ import annotations

DIRS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)]


class RefOthello:
    """board[r][c]: 0 empty, 1 black, -1 white; black to move first."""

    def __init__(self, size: int):
        self.n = size
        self.board = [[0] * size for _ in range(size)]
        m = size // 2
        self.board[m - 1][m - 1] = self.board[m][m] = -1
        self.board[m - 1][m] = self.board[m][m - 1] = 1
        self.player = 1
        self.over = False
        self.passed = False
        self._settle()

    def flips(self, r: int, c: int, player: int) -> list[tuple[int, int]]:
        if self.board[r][c] != 0:
            return []
        out = []
        for dr, dc in DIRS:
            line = []
            rr, cc = r + dr, c + dc
            while 0 <= rr < self.n and 0 <= cc < self.n and self.board[rr][cc] == -player:
                line.append((rr, cc))
                rr, cc = rr + dr, cc + dc
            if line and 0 <= rr < self.n and 0 <= cc < self.n and self.board[rr][cc] == player:
                out += line
        return out

    def legal(self, player: int | None = None) -> set[int]:
        player = self.player if player is None else player
        if player == self.player and getattr(self, "_legal", None) is not None:
            return self._legal
        return {r * self.n + c for r in range(self.n) for c in range(self.n) if self.flips(r, c, player)}

    def _settle(self) -> None:
        """Pass when the player to move cannot move; end the game when neither can."""
        self.passed, self._legal = False, None
        if not self.legal():
            if self.legal(-self.player):
                self.player = -self.player
                self.passed = True
            else:
                self.over = True
        self._legal = self.legal()

    def play(self, square: int) -> set[int]:
        r, c = divmod(square, self.n)
        flipped = self.flips(r, c, self.player)
        assert flipped and not self.over, "illegal move"
        for rr, cc in flipped:
            self.board[rr][cc] = self.player
        self.board[r][c] = self.player
        self.player = -self.player
        self._settle()
        return {rr * self.n + cc for rr, cc in flipped}

    def flat(self) -> list[int]:
        return [v for row in self.board for v in row]
