"""Column layout of the book's arrays (row numbers of the 2-D column blocks).

Each block is ``(fields, capacity)`` in C order, so every field is one
contiguous column; grouping the columns in a few blocks keeps the number of
arguments to the compiled kernels (and so their call overhead) small.

Position slots are grouped: the open positions of one (margin mode,
instrument) pair, group ``mode * n_instruments + symbol``, occupy one
contiguous run of slots (see :mod:`monitor.book.store`), so a tick walks a
plain slot range and the compiler can vectorise it.
"""

# account float columns
A_WB = 0  # wallet balance after haircuts (cross collateral)
A_UPNL = 1  # sum of cross uPnL, maintained by deltas
A_MM = 2  # sum of cross maintenance margin, maintained by deltas
N_AF = 3  # (the margin ratio is derived on read: MarginBook.margin_ratio)

# account int columns (int64)
A_STATUS = 0  # risk level of the cross part (risk.levels.Status)
A_NCROSS = 1  # open cross positions
A_NISO = 2  # open isolated positions
A_HEAD = 3  # first position slot of the account's list, -1 if none
A_DIRTY = 4  # 1 while the account is in the dirty list
N_AI = 5

# position float columns
P_QTY = 0
P_ENTRY = 1
P_ISO_MARGIN = 2
P_UPNL = 3
P_MM = 4
N_PF = 5

# position int columns (int32)
P_ACCT = 0  # owning account slot, -1 for a free slot
P_SYM = 1
P_MODE = 2  # MODE_CROSS / MODE_ISOLATED
P_BRACKET = 3
P_SUB = 4  # interned sub-account label
P_NEXT = 5  # next position slot of the same account, -1 at the end
P_PREV = 6  # previous position slot of the same account, -1 at the head
P_STATUS = 7  # level of an isolated position
N_PI = 8

MODE_CROSS = 0
MODE_ISOLATED = 1

# meta counters (int64)
M_HWM = 0  # end of the slot range in use (slots at and above are unused)
M_NFREE = 1  # free slots below the high-water mark
M_NDIRTY = 2  # accounts in the dirty list
N_META = 3

# kernel results
OK = 0
STALE = 1
