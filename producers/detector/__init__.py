"""``waveshield fit-detector``: the order of the fit (:mod:`.fit`) and its report (:mod:`.report`)."""
