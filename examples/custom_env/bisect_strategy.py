def strategy(high, history):
    low, top = 1, high
    for guess, hint in history:
        if hint == "higher":
            low = max(low, guess + 1)
        else:
            top = min(top, guess - 1)
    return (low + top) // 2
