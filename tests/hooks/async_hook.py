from channels.layers import get_channel_layer

from tests.hooks.recorder import report


async def flow_handlers(database, table, change):
    await get_channel_layer().send(f"hooks.async.{database}", report(database, table, change))
