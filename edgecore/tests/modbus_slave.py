#!/usr/bin/env python3
"""A real Modbus slave for edgecore's bus tests and kedge's e2e tests (pymodbus==3.16.1,
pyserial==3.5).

Serves, as RTU on the serial device given by --port (one end of a socat PTY pair), or as
Modbus TCP on 127.0.0.1:<--tcp>, any slave id:
  - holding registers 0..15: register 0 counts up by itself every 200 ms, the rest hold what
    the master writes;
  - input registers 0..15, coils 0..15, discrete inputs 0..15.

The test sees the slave's side through --state: a JSON file rewritten (atomically) on every
tick and every write: {"counter": n, "holding": [16 ints], "coils": [16 bools], "writes": n}.
The file first appears once the server is listening.
"""

import argparse
import asyncio
import json
import os

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SIZE = 16
READ_HOLDING = 3
WRITE_COIL = {5, 15}
WRITE_HOLDING = {6, 16}


class Slave:
    def __init__(self, state_path):
        self.state_path = state_path
        self.counter = 0
        self.holding = [0] * SIZE
        self.coils = [False] * SIZE
        self.writes = 0

    def dump(self):
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "counter": self.counter,
                    "holding": self.holding,
                    "coils": self.coils,
                    "writes": self.writes,
                },
                f,
            )
        os.replace(tmp, self.state_path)

    async def action(self, function_code, start_address, address, count, registers, set_values):
        """Called by pymodbus on every access, before it reads or writes `registers`."""
        if function_code == READ_HOLDING:
            # Register 0 is the slave's own counter: show its current value.
            index = 0 - start_address
            if 0 <= index < len(registers):
                registers[index] = self.counter & 0xFFFF
        elif function_code in WRITE_HOLDING and set_values is not None:
            for i, v in enumerate(set_values):
                if 0 <= address + i < SIZE:
                    self.holding[address + i] = int(v)
            self.writes += 1
            self.dump()
        elif function_code in WRITE_COIL and set_values is not None:
            for i, v in enumerate(set_values):
                if 0 <= address + i < SIZE:
                    self.coils[address + i] = bool(v)
            self.writes += 1
            self.dump()
        return None

    async def tick(self):
        while True:
            await asyncio.sleep(0.2)
            self.counter += 1
            self.holding[0] = self.counter & 0xFFFF
            self.dump()


async def main():
    parser = argparse.ArgumentParser(description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device (PTY) to serve as Modbus RTU")
    where.add_argument("--tcp", type=int, help="TCP port on 127.0.0.1 to serve as Modbus TCP")
    parser.add_argument("--state", required=True, help="JSON file showing the slave's registers")
    parser.add_argument("--baud", type=int, default=19200)
    args = parser.parse_args()

    slave = Slave(args.state)
    bits = [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)]
    device = SimDevice(
        id=0,
        simdata=(
            bits,
            [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)],
            [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)],
        ),
        action=slave.action,
    )
    if args.tcp is not None:
        server = ModbusTcpServer(device, address=("127.0.0.1", args.tcp))
    else:
        server = ModbusSerialServer(device, port=args.port, baudrate=args.baud, timeout=1)
    ticker = asyncio.create_task(slave.tick())
    slave.dump()
    try:
        await server.serve_forever()
    finally:
        ticker.cancel()


if __name__ == "__main__":
    asyncio.run(main())
