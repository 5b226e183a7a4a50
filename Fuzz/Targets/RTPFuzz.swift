import Foundation
import MeshMedia

/// RTP packets (after SRTP) into a call's receiver: the RTP header and its extensions, the redundant payload,
/// Opus decoding and the playout buffer, one 20 ms frame played per packet. A packet must parse back to
/// itself after serializing.
enum RTPFuzz {
    static func run(_ input: [UInt8]) {
        let receiver: MediaReceiver
        do {
            receiver = try MediaReceiver(config: MediaConfig())
        } catch {
            fatalError("no Opus decoder: \(error)")
        }
        var now = Fuzz.nowMs
        for bytes in Fuzz.messages(input) {
            if let packet = RTPPacket(parsing: bytes) {
                precondition(RTPPacket(parsing: packet.serialize()) == packet, "RTP packet round trip")
            }
            _ = receiver.receive(rtp: bytes, nowMs: now)
            _ = receiver.nextFrame(nowMs: now)
            now += 20
        }
    }

    static func seeds() -> [[UInt8]] {
        let all = packets()
        return [Fuzz.framed(Array(all.prefix(12))), Fuzz.framed(Array(all.suffix(3))), Fuzz.framed(all[20..<30].reversed())]
    }

    /// What a sender makes of a second of a tone, with redundant copies and loss reports.
    static func packets() -> [[UInt8]] {
        var config = MediaConfig()
        config.redundancy = .on
        do {
            let sender = try MediaSender(config: config, ssrc: 0x5EED, initialSequence: 65_530, initialTimestamp: 1_000)
            let report = LossReport(lossPercent: 6, burstLossPercent: 3)
            return try (0..<50).compactMap { (frame) throws(MediaError) in
                let tone = (0..<Audio.frameSamples).map { i in
                    Int16(8_000 * sin(Double(frame * Audio.frameSamples + i) * 2 * .pi * 440 / Double(Audio.sampleRate)))
                }
                return try sender.packetize(frame: tone, report: report)
            }
        } catch {
            fatalError("no Opus encoder: \(error)")
        }
    }
}
