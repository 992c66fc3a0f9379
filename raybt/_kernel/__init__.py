"""The compiled helpers of the simulation kernel, by concern: ``state`` (the position state and compile options),
``orders``, ``stops``, ``stretches`` (signal scan, valuation of quiet stretches). :mod:`raybt.engine` compiles its
bar loop from them."""


