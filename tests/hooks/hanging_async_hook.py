import asyncio


async def flow_handlers(database, table, change):
    await asyncio.sleep(3600)  # far past CHANGEFLOW_HANDLER_TIMEOUT
