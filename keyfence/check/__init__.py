"""The hermetic policy check: the program's registrations, judged by the policy pack over its real protocol.

``harness`` collects what the program registers, ``analyzer`` runs the pack as its own process
and speaks the analyzer gRPC protocol to it, ``runner`` ties them into ``check`` and ``plan``,
and ``report``/``markdown``/``output`` render the verdict (or, via ``failure``, why there is none).
"""
