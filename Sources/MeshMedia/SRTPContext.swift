internal import CSRTP

/// One direction of an SRTP session (RFC 3711) with libsrtp2: AES_CM_128_HMAC_SHA1_80, any SSRC, the default
/// 128-packet replay window. The sender protects with an `.outbound` context, the receiver unprotects with
/// an `.inbound` one made from the same 30-byte master key and salt. Not thread-safe: one owner per context.
public final class SRTPContext {
    public enum Direction: Sendable {
        case outbound
        case inbound
    }

    /// RFC 3711 §8.2 with AES_CM_128: a 16-byte master key followed by a 14-byte master salt.
    public static let masterKeyAndSaltLength = 30
    /// The most `srtp_protect` appends (tag and MKI).
    private static let maxTrailer = Int(SRTP_MAX_TRAILER_LEN)

    /// `srtp_init` runs once per process, on first use; Swift runs static initialisers exactly once.
    private static let libraryStatus: srtp_err_status_t = srtp_init()

    private let session: srtp_t

    public init(masterKeyAndSalt: [UInt8], direction: Direction) throws(MediaError) {
        guard masterKeyAndSalt.count == Self.masterKeyAndSaltLength else {
            throw MediaError("SRTP master key and salt must be \(Self.masterKeyAndSaltLength) bytes, got \(masterKeyAndSalt.count)")
        }
        guard Self.libraryStatus == srtp_err_status_ok else {
            throw MediaError("srtp_init failed: error \(Self.libraryStatus.rawValue)")
        }
        var policy = srtp_policy_t()
        srtp_crypto_policy_set_rtp_default(&policy.rtp)
        srtp_crypto_policy_set_rtcp_default(&policy.rtcp)
        policy.ssrc.type = direction == .outbound ? ssrc_any_outbound : ssrc_any_inbound
        var key = masterKeyAndSalt
        var created: srtp_t?
        let status = key.withUnsafeMutableBufferPointer { keyBytes in
            policy.key = keyBytes.baseAddress
            return srtp_create(&created, &policy)
        }
        guard status == srtp_err_status_ok, let created else {
            throw MediaError("srtp_create failed: error \(status.rawValue)")
        }
        session = created
    }

    deinit { srtp_dealloc(session) }

    /// The SRTP packet for a plaintext RTP packet.
    public func protect(_ rtp: [UInt8]) throws(MediaError) -> [UInt8] {
        guard rtp.count >= RTPPacket.headerSize else {
            throw MediaError("srtp_protect: \(rtp.count) bytes is shorter than an RTP header")
        }
        var buffer = rtp + [UInt8](repeating: 0, count: Self.maxTrailer)
        var length = Int32(rtp.count)
        let status = srtp_protect(session, &buffer, &length)
        guard status == srtp_err_status_ok else { throw MediaError("srtp_protect failed: error \(status.rawValue)") }
        return Array(buffer.prefix(Int(length)))
    }

    /// The plaintext RTP packet, or nil when the packet is malformed, fails authentication, or is a replay.
    public func unprotect(_ srtp: [UInt8]) -> [UInt8]? {
        guard srtp.count >= RTPPacket.headerSize else { return nil }
        var buffer = srtp
        var length = Int32(srtp.count)
        guard srtp_unprotect(session, &buffer, &length) == srtp_err_status_ok else { return nil }
        return Array(buffer.prefix(Int(length)))
    }
}
