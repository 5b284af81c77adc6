"""mailer: the outbound mail service of the survey platform."""

__version__ = "0.1.0"
