/// The audio format every part of the media core works in: 48 kHz mono Int16, 20 ms frames.
public enum Audio {
    public static let sampleRate = 48_000
    public static let frameSamples = 960
    public static let frameMs = 20
}

/// Encoder and playout settings for one call. The defaults are the 24 kbit/s voice profile.
public struct MediaConfig: Sendable {
    /// Opus target bitrate in bit/s (Opus accepts 500...512_000).
    public var bitrate: Int = 24_000
    /// Opus encoder complexity, 0...10.
    public var complexity: Int = 5
    /// Opus in-band FEC: the encoder adds a low-rate copy of each frame to the next packet, and the
    /// receiver uses it to recover a single lost packet.
    public var fec: Bool = true
    /// The loss rate the encoder plans FEC for, 0...100.
    public var expectedLossPercent: Int = 10
    /// Opus discontinuous transmission: near-empty packets during silence.
    public var dtx: Bool = false
    /// How long the receiver holds the first packet of a stream before it starts to play.
    public var playoutTargetMs: Int = 40

    public init() {}
}

/// A failure in the media core: one line for people, no trailing period.
public struct MediaError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
