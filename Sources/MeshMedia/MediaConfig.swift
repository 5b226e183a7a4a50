/// The audio format every part of the media core works in: 48 kHz mono Int16, 20 ms ticks.
public enum Audio {
    public static let sampleRate = 48_000
    public static let frameSamples = 960
    public static let frameMs = 20
    /// Samples per millisecond.
    public static let samplesPerMs = sampleRate / 1000
}

/// An encoder setting for the whole call, switchable at any frame boundary (`MediaSender.apply`).
public struct QualityProfile: Sendable, Codable, Equatable, CustomStringConvertible {
    public var name: String
    /// Opus target bitrate in bit/s (Opus accepts 500...512_000).
    public var bitrate: Int
    /// Opus in-band FEC: the encoder adds a low-rate copy of each frame to the next packet.
    public var fec: Bool
    /// Audio per packet: 20 or 40 ms.
    public var frameMs: Int

    public init(name: String, bitrate: Int, fec: Bool, frameMs: Int = Audio.frameMs) {
        self.name = name
        self.bitrate = bitrate
        self.fec = fec
        self.frameMs = frameMs
    }

    public static let studio = QualityProfile(name: "studio", bitrate: 64_000, fec: false)
    public static let good = QualityProfile(name: "good", bitrate: 32_000, fec: true)
    public static let normal = QualityProfile(name: "normal", bitrate: 24_000, fec: true)
    public static let degraded = QualityProfile(name: "degraded", bitrate: 12_000, fec: true)
    public static let catastrophic = QualityProfile(name: "catastrophic", bitrate: 6_000, fec: true, frameMs: 40)
    public static let all: [QualityProfile] = [.studio, .good, .normal, .degraded, .catastrophic]

    public static func named(_ name: String) -> QualityProfile? { all.first { $0.name == name } }

    public var description: String { "\(name) (\(bitrate / 1000) kbit/s, \(frameMs) ms\(fec ? ", FEC" : ""))" }
}

/// How the receiver schedules playout.
public enum PlayoutMode: Sendable, Equatable, CustomStringConvertible {
    /// NetEq-style: the delay follows a quantile of the observed arrival jitter, moved in silence and by
    /// time-stretching speech.
    case adaptive
    /// A fixed buffer of this many ms (the baseline the adaptive buffer is measured against).
    case fixed(ms: Int)

    /// `adaptive` or `fixed:MS`.
    public init?(_ text: String) {
        if text == "adaptive" {
            self = .adaptive
        } else if text.hasPrefix("fixed:"), let ms = Int(text.dropFirst(6)), (0...2000).contains(ms) {
            self = .fixed(ms: ms)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .adaptive: "adaptive"
        case .fixed(let ms): "fixed:\(ms)"
        }
    }
}

/// Encoder and playout settings for one call. The defaults are the 24 kbit/s voice profile with DTX.
public struct MediaConfig: Sendable {
    /// The starting encoder profile (bitrate, FEC, frame length).
    public var profile: QualityProfile = .normal
    /// Opus encoder complexity, 0...10.
    public var complexity: Int = 5
    /// The loss rate the encoder plans FEC for, 0...100.
    public var expectedLossPercent: Int = 10
    /// Redundant copies of earlier packets (RFC 2198-style, `RedundantPayload`): `auto` adds them while the
    /// peer reports burst loss.
    public var redundancy: RedundancyMode = .auto
    /// Opus discontinuous transmission: during silence the sender sends one packet every 400 ms and the
    /// receiver plays comfort noise.
    public var dtx: Bool = true
    /// speexdsp noise suppression on the sender's input.
    public var denoise: Bool = false
    /// speexdsp voice activity detection on the sender's input: frames it calls non-speech are attenuated
    /// before encoding, so Opus DTX also engages over steady background noise.
    public var vad: Bool = false
    /// Receiver: adaptive or fixed playout.
    public var playout: PlayoutMode = .adaptive
    /// Receiver: the first packet of a stream is held this long (adaptive: the delay it starts from).
    public var playoutTargetMs: Int = 40
    /// Receiver: no packet is played later than this after its arrival; the adaptive target stays below it.
    public var playoutCeilingMs: Int = 600
    /// Receiver: the adaptive target is this quantile of the relative arrival delays.
    public var delayQuantile: Double = 0.95

    public init() {}

    /// The profile's bitrate.
    public var bitrate: Int {
        get { profile.bitrate }
        set { profile.bitrate = newValue }
    }

    /// Sender: packets carry FEC (the profile's setting). Receiver: a single lost packet is rebuilt from the
    /// next packet's FEC data; off, it is concealed.
    public var fec: Bool {
        get { profile.fec }
        set { profile.fec = newValue }
    }
}

/// A failure in the media core: one line for people, no trailing period.
public struct MediaError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}
