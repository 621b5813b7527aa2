"""The social graph read in one go for many users (the presence path's batched cache misses) gives
exactly what the one-user read gives: friends, blocks either way kept apart, bots, unknown ids."""

from __future__ import annotations

from im_server.storage import UserStore
from im_server.storage.engine import Database
from im_server.storage.social import SocialGraph, SocialStore

NOW = 1_000_000


async def test_graphs_match_the_one_user_read(db: Database) -> None:
    users, social = UserStore(db), SocialStore(db)
    ann, ben, cat, dan = [
        (await users.create_user(name, "x", name, now=NOW)).id for name in ("ann", "ben", "cat", "dan")
    ]
    bot = (await users.create_user("bot", "x", "bot", now=NOW, is_bot=True)).id
    await social.request_friend(ann, ben, "hi", now=NOW)
    await social.request_friend(ben, ann, "hi", now=NOW)  # accepted: friends both ways
    await social.request_friend(ann, cat, "hi", now=NOW)
    await social.request_friend(cat, ann, "hi", now=NOW)
    await social.block(dan, ann, now=NOW)
    await social.block(ann, bot, now=NOW)
    unknown = max(ann, ben, cat, dan, bot) + 1

    graphs = await social.graphs([ann, ben, cat, dan, bot, unknown, ann])
    assert set(graphs) == {ann, ben, cat, dan, bot, unknown}
    for user_id, graph in graphs.items():
        assert graph == await social.graph(user_id)
    assert graphs[ann] == SocialGraph(frozenset({ben, cat}), frozenset({bot}), False)
    assert graphs[ben] == SocialGraph(frozenset({ann}), frozenset(), False)
    assert graphs[dan] == SocialGraph(frozenset(), frozenset({ann}), False)  # a block is one-sided
    assert graphs[bot].is_bot and not graphs[bot].friends
    assert graphs[unknown] == SocialGraph(frozenset(), frozenset(), False)
    assert await social.graphs([]) == {}


async def test_graphs_of_more_users_than_one_statement_takes(db: Database) -> None:
    users, social = UserStore(db), SocialStore(db)
    ann, ben = [(await users.create_user(name, "x", name, now=NOW)).id for name in ("ann", "ben")]
    await social.block(ann, ben, now=NOW)
    await social.request_friend(ben, ann, "hi", now=NOW)
    await social.request_friend(ann, ben, "hi", now=NOW)
    many = [ann, *range(ben + 1, ben + 1_200), ben]  # past the 500 ids of one IN list
    graphs = await social.graphs(many)
    assert len(graphs) == len(many)
    assert graphs[ann] == SocialGraph(frozenset({ben}), frozenset({ben}), False)
    assert graphs[ben] == SocialGraph(frozenset({ann}), frozenset(), False)
    assert all(graphs[user_id] == SocialGraph(frozenset(), frozenset(), False) for user_id in many[1:-1])
