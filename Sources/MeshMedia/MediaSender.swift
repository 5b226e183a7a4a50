/// Encodes 20 ms frames to Opus and wraps each in a plaintext RTP packet: payload type 111, the sequence
/// number +1 and the timestamp +960 per frame, the marker bit on the first packet. SRTP protection is the
/// caller's next step (`SRTPContext.protect`).
public final class MediaSender {
    /// The dynamic payload type used for Opus (the common choice, as in WebRTC).
    public static let payloadType: UInt8 = 111

    public let ssrc: UInt32
    public private(set) var packetsSent = 0
    private let encoder: OpusEncoder
    private var sequence: UInt16
    private var timestamp: UInt32

    /// RFC 3550 §5.1 recommends random initial sequence numbers and timestamps; pass them in to get that.
    public init(config: MediaConfig, ssrc: UInt32, initialSequence: UInt16 = 0, initialTimestamp: UInt32 = 0)
        throws(MediaError) {
        encoder = try OpusEncoder(config: config)
        self.ssrc = ssrc
        sequence = initialSequence
        timestamp = initialTimestamp
    }

    /// The RTP packet for the next frame of `Audio.frameSamples` samples.
    public func packetize(frame: [Int16]) throws(MediaError) -> [UInt8] {
        let packet = RTPPacket(payloadType: Self.payloadType, marker: packetsSent == 0, sequence: sequence,
                               timestamp: timestamp, ssrc: ssrc, payload: try encoder.encode(frame))
        sequence &+= 1
        timestamp &+= UInt32(Audio.frameSamples)
        packetsSent += 1
        return packet.serialize()
    }
}
