"""Column layout of the trade records the simulation kernel writes and the metrics read.

A backtest's trades are one float64 array of shape ``(n_trades, N_TRADE_FIELDS)`` (numba kernels cannot return
lists of objects cheaply). Bar positions are 0-based positions within the simulated range, i.e. indices into the
equity curve. Prices are fill prices after slippage, in quote currency per unit.
"""

SYMBOL = 0  # column position of the symbol in the market data
DIRECTION = 1  # +1 long, -1 short
ENTRY_BAR = 2  # bar of the entry fill
EXIT_BAR = 3  # bar of the exit fill (last bar of the range for an open trade)
ENTRY_PRICE = 4
EXIT_PRICE = 5  # fill price, or the last close for a trade still open at the end
UNITS = 6  # units held, always positive
FEES = 7  # proportional + fixed fees paid on entry and exit (entry only for an open trade)
PNL = 8  # net profit in quote currency after all fees
RETURN = 9  # PNL / (entry value + entry fees): return on the capital committed
REASON = 10  # exit reason code, see EXIT_REASONS
N_TRADE_FIELDS = 11

EXIT_SIGNAL, EXIT_STOP_LOSS, EXIT_TAKE_PROFIT, EXIT_TRAILING_STOP, EXIT_OPEN_AT_END = 0, 1, 2, 3, 4
EXIT_REASONS = ("signal", "stop_loss", "take_profit", "trailing_stop", "open_at_end")
