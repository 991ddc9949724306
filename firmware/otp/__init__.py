"""One-time codes by encrypted e-mail: the SMS replacement of the seeds' directory product."""

from .codes import CodeSender, Issued, OtpCodes, OtpSettings, Verdict

__all__ = ["CodeSender", "Issued", "OtpCodes", "OtpSettings", "Verdict"]
