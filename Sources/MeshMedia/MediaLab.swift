/// A network trace: one row per 20 ms packet the sender makes, with the time it left and the time it
/// arrived (nil: lost). Times are ms on one reference clock.
public struct Trace: Sendable, Equatable {
    public struct Row: Sendable, Equatable {
        public var sequence: Int
        public var sendMs: Int64
        public var arrivalMs: Int64?

        public init(sequence: Int, sendMs: Int64, arrivalMs: Int64?) {
            self.sequence = sequence
            self.sendMs = sendMs
            self.arrivalMs = arrivalMs
        }
    }

    public static let header = "seq,send_ms,arrival_ms"
    /// Rows in sequence order.
    public var rows: [Row]

    public init(rows: [Row]) {
        self.rows = rows.sorted { $0.sequence < $1.sequence }
    }

    /// Parses the CSV format: the header `seq,send_ms,arrival_ms`, then one row per packet; an empty
    /// `arrival_ms` is a lost packet. Sequence numbers must be 0, 1, 2, … (in any row order). Times may have
    /// decimals (captures give µs) and are rounded to whole ms, the media clock's unit.
    public init(csv: String) throws(MediaError) {
        var lines = csv.split(whereSeparator: \.isNewline).map { String($0.filter { $0 != " " && $0 != "\r" }) }
        guard lines.first == Self.header else { throw MediaError("trace: the first line must be \(Self.header)") }
        lines.removeFirst()
        var rows: [Row] = []
        for (index, line) in lines.enumerated() where !line.isEmpty {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count == 3, let sequence = Int(fields[0]), let send = Self.milliseconds(fields[1]),
                  fields[2].isEmpty || Self.milliseconds(fields[2]) != nil
            else { throw MediaError("trace line \(index + 2): expected seq,send_ms,arrival_ms, got \(line)") }
            rows.append(Row(sequence: sequence, sendMs: send, arrivalMs: Self.milliseconds(fields[2])))
        }
        self.init(rows: rows)
        guard rows.isEmpty == false, self.rows.enumerated().allSatisfy({ $0.offset == $0.element.sequence }) else {
            throw MediaError("trace: sequence numbers must run 0, 1, 2, … without gaps or repeats")
        }
    }
}

extension Trace {
    /// A time field, "41" or "41.356", to the nearest whole ms; nil when it is not a finite number.
    static func milliseconds(_ field: Substring) -> Int64? {
        guard let value = Double(field), value.isFinite, abs(value) < 1e15 else { return nil }
        return Int64(value.rounded())
    }
}

/// What a media-lab replay measured.
public struct MediaLabReport: Sendable, Codable, Equatable {
    public var playout: String
    public var profile: String
    public var dtx: Bool
    /// Length of the trace and of the output audio, s.
    public var traceSeconds: Double
    public var outputSeconds: Double
    public var framesIn: Int
    public var packetsSent: Int
    public var framesSuppressedByDTX: Int
    /// Packets that carried a redundant copy of an earlier one.
    public var packetsWithRedundancy: Int
    /// Mean payload bit rate over the trace (Opus and redundant copies, without RTP/SRTP headers), kbit/s.
    public var payloadKbps: Double
    /// The share of input frames the speexdsp VAD judged speech, with `--vad`.
    public var speechPercent: Double?
    /// Mean network delay (send to arrival) of the packets that arrived, ms.
    public var networkDelayMs: Double
    /// Mouth-to-ear: network delay plus the delay added by playout (arrival to play), means, ms.
    public var mouthToEarMs: Double
    /// The playout delay averaged per minute of the call (`currentPlayoutDelayMs`, the latest speech packet's,
    /// sampled every tick).
    public var playoutDelayByMinuteMs: [Double]
    public var receiver: ReceiverStats
}

/// Offline replay of a trace: encoder → channel (the trace) → playout → decoder, on a virtual clock, so the
/// result repeats exactly. The input audio is repeated to cover the trace. The receiver's loss report goes back
/// to the sender every tick over a lossless reverse path as slow as the latest packet's one-way delay, as in a
/// call where each side's packets carry its report (`LossReport`).
public enum MediaLab {
    public static func run(trace: Trace, input: [Int16], config: MediaConfig) throws(MediaError)
        -> (report: MediaLabReport, output: [Int16]) {
        guard !input.isEmpty else { throw MediaError("media lab: the input audio is empty") }
        let sender = try MediaSender(config: config, ssrc: 0x4d4c_4142)
        let receiver = try MediaReceiver(config: config)
        /// Packets in flight, ordered by arrival (ties: the order sent).
        var inFlight: [(arrivalMs: Int64, order: Int, packet: [UInt8])] = []
        var reports: [(dueMs: Int64, report: LossReport)] = []
        var networkSum = 0.0
        var arrived = 0
        var reverseDelayMs: Int64 = 0
        // Until every packet that arrives has played, at most the delay ceiling past the last one sent.
        let endMs = (trace.rows.last?.sendMs ?? 0) + Int64(Audio.frameMs + config.playoutCeilingMs)
        var output: [Int16] = []
        output.reserveCapacity(Int(endMs) * Audio.samplesPerMs)
        var minutes: [(sum: Double, count: Int)] = []
        var nextRow = 0
        var now: Int64 = 0
        while now < endMs, nextRow < trace.rows.count || !inFlight.isEmpty || receiver.bufferedPackets > 0 {
            while nextRow < trace.rows.count, trace.rows[nextRow].sendMs <= now {
                let row = trace.rows[nextRow]
                while let first = reports.first, first.dueMs <= row.sendMs {
                    sender.apply(report: first.report)
                    reports.removeFirst()
                }
                let start = (nextRow * Audio.frameSamples) % input.count
                var frame = Array(input[start..<min(start + Audio.frameSamples, input.count)])
                if frame.count < Audio.frameSamples { frame += input.prefix(Audio.frameSamples - frame.count) }
                if let packet = try sender.packetize(frame: frame), let arrival = row.arrivalMs {
                    let slot = inFlight.firstIndex { $0.arrivalMs > arrival } ?? inFlight.endIndex
                    inFlight.insert((arrival, nextRow, packet), at: slot)
                    networkSum += Double(arrival - row.sendMs)
                    arrived += 1
                }
                nextRow += 1
            }
            while let first = inFlight.first, first.arrivalMs <= now {
                _ = receiver.receive(rtp: first.packet, nowMs: first.arrivalMs)
                reverseDelayMs = first.arrivalMs - trace.rows[first.order].sendMs
                inFlight.removeFirst()
            }
            output += receiver.nextFrame(nowMs: now)
            let due = now + reverseDelayMs
            reports.insert((due, receiver.report), at: reports.firstIndex { $0.dueMs > due } ?? reports.endIndex)
            if let delay = receiver.currentPlayoutDelayMs {
                let minute = Int(now / 60_000)
                if minutes.count <= minute { minutes += Array(repeating: (0, 0), count: minute - minutes.count + 1) }
                minutes[minute].sum += delay
                minutes[minute].count += 1
            }
            now += Int64(Audio.frameMs)
        }
        let stats = receiver.stats
        let network = arrived == 0 ? 0 : networkSum / Double(arrived)
        let report = MediaLabReport(
            playout: config.playout.description, profile: config.profile.description, dtx: config.dtx,
            traceSeconds: Double(trace.rows.count * Audio.frameMs) / 1000,
            outputSeconds: Double(output.count) / Double(Audio.sampleRate),
            framesIn: sender.framesIn, packetsSent: sender.packetsSent, framesSuppressedByDTX: sender.framesSuppressed,
            packetsWithRedundancy: sender.packetsWithRedundancy,
            payloadKbps: Double(sender.payloadBytes * 8) / Double(max(1, trace.rows.count * Audio.frameMs)),
            speechPercent: sender.speechPercent,
            networkDelayMs: network, mouthToEarMs: network + stats.meanPlayoutDelayMs,
            playoutDelayByMinuteMs: minutes.map { $0.count == 0 ? 0 : $0.sum / Double($0.count) },
            receiver: stats)
        return (report, output)
    }
}
