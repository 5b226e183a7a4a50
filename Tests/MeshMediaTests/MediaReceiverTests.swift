import MeshMedia
import Testing

/// Drives a sender and a receiver on a virtual clock: packet k is sent at 20·k ms and arrives then unless
/// `arrivals` says otherwise or it is `lost`; the receiver ticks every 20 ms, taking arrivals up to and
/// including the tick first.
struct PlayoutRun {
    var config = MediaConfig()
    var packetCount = 50
    var initialSequence: UInt16 = 0
    var arrivals: [Int: Int64] = [:]
    var lost: Set<Int> = []

    func arrival(of index: Int) -> Int64? {
        lost.contains(index) ? nil : arrivals[index] ?? Int64(index * Audio.frameMs)
    }

    func packets(ssrc: UInt32 = 7) throws -> [[UInt8]] {
        let sender = try MediaSender(config: config, ssrc: ssrc, initialSequence: initialSequence)
        let audio = TestAudio.sine(hz: 330, count: packetCount * Audio.frameSamples)
        return try TestAudio.frames(audio).map { try sender.packetize(frame: $0) }
    }

    /// The frames played over `ticks` ticks (by default until the last packet's slot), and the receiver.
    func play(ticks: Int? = nil) throws -> (frames: [[Int16]], receiver: MediaReceiver) {
        let packets = try packets()
        let schedule = packets.indices.compactMap { index in arrival(of: index).map { (index, $0) } }
            .sorted { $0.1 < $1.1 }
        let receiver = try MediaReceiver(config: config)
        var frames: [[Int16]] = []
        var next = 0
        for tick in 0..<(ticks ?? packetCount + config.playoutTargetMs / Audio.frameMs) {
            let now = Int64(tick * Audio.frameMs)
            while next < schedule.count, schedule[next].1 <= now {
                #expect(receiver.receive(rtp: packets[schedule[next].0], nowMs: schedule[next].1))
                next += 1
            }
            let frame = receiver.nextFrame(nowMs: now)
            #expect(frame.count == Audio.frameSamples)
            frames.append(frame)
        }
        return (frames, receiver)
    }
}

@Suite struct MediaReceiverTests {
    @Test func silenceBeforeTheFirstPacket() throws {
        let receiver = try MediaReceiver(config: MediaConfig())
        #expect(receiver.nextFrame(nowMs: 0) == [Int16](repeating: 0, count: Audio.frameSamples))
        #expect(receiver.stats == ReceiverStats())
    }

    @Test func inOrderPacketsPlayAtTheTargetDelay() throws {
        let (frames, receiver) = try PlayoutRun().play()
        let stats = receiver.stats
        #expect(stats.packetsReceived == 50)
        #expect(stats.packetsLost == 0 && stats.packetsLate == 0 && stats.duplicates == 0)
        #expect(stats.framesConcealed == 0 && stats.fecRecovered == 0 && stats.malformed == 0)
        #expect(stats.meanPlayoutDelayMs == 40 && stats.currentPlayoutDelayMs == 40)
        #expect(stats.jitterMs == 0)
        // Two ticks of silence while the first packet waits out the 40 ms target, then 50 frames of audio.
        #expect(frames.prefix(2).allSatisfy { TestAudio.energy($0) == 0 })
        #expect(frames.count == 52)
        #expect(frames[3...].allSatisfy { TestAudio.energy($0) > 1_000_000 })
    }

    @Test func singleLossIsRecoveredByFEC() throws {
        var run = PlayoutRun()
        run.lost = [20]
        let (frames, receiver) = try run.play()
        let stats = receiver.stats
        #expect(stats.packetsLost == 1)
        #expect(stats.fecRecovered == 1)
        #expect(stats.framesConcealed == 0)
        #expect(TestAudio.energy(frames[22]) > 1_000_000)
    }

    @Test func burstIsConcealed() throws {
        var run = PlayoutRun()
        run.lost = [20, 21, 22]
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLost == 3)
        // Slots 20 and 21 have no next packet in time; slot 22 takes its FEC copy from packet 23.
        #expect(stats.framesConcealed == 2)
        #expect(stats.fecRecovered == 1)

        run.config.fec = false
        let withoutFEC = try run.play().receiver.stats
        #expect(withoutFEC.framesConcealed == 3 && withoutFEC.fecRecovered == 0)
    }

    @Test func latePacketIsCountedAndDropped() throws {
        var run = PlayoutRun()
        run.arrivals[20] = 20 * 20 + 70  // its slot played at 440 ms
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLate == 1)
        #expect(stats.packetsLost == 0)
        #expect(stats.fecRecovered == 1)
        #expect(stats.packetsReceived == 50)
    }

    @Test func reorderingWithinTheTargetIsHandled() throws {
        var run = PlayoutRun()
        run.arrivals[0] = 5  // the stream's first packet overtaken by the second
        run.arrivals[1] = 0
        run.arrivals[20] = 20 * 21 + 5
        run.arrivals[21] = 20 * 21
        run.arrivals[30] = 20 * 30 + 35
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLate == 0 && stats.packetsLost == 0)
        #expect(stats.framesConcealed == 0 && stats.fecRecovered == 0)
        #expect(stats.jitterMs > 0)
        #expect(abs(stats.meanPlayoutDelayMs - 40) < 2)
    }

    @Test func sequenceNumbersWrap() throws {
        var run = PlayoutRun()
        run.initialSequence = 65_520
        run.lost = [20]  // sequence 4, after the wrap
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLost == 1 && stats.fecRecovered == 1)
        #expect(stats.framesConcealed == 0 && stats.packetsLate == 0)
        #expect(stats.meanPlayoutDelayMs == 40)
    }

    @Test func duplicatesAndMalformedPacketsAreCounted() throws {
        let run = PlayoutRun()
        let packets = try run.packets()
        let receiver = try MediaReceiver(config: run.config)
        #expect(receiver.receive(rtp: packets[0], nowMs: 0))
        #expect(receiver.receive(rtp: packets[0], nowMs: 1))
        _ = receiver.nextFrame(nowMs: 40)
        #expect(receiver.receive(rtp: packets[0], nowMs: 41))  // after it played
        #expect(!receiver.receive(rtp: [0x80, 0x6f, 0], nowMs: 42))
        let otherType = RTPPacket(payloadType: 0, sequence: 1, timestamp: 960, ssrc: 7, payload: [1])
        #expect(!receiver.receive(rtp: otherType.serialize(), nowMs: 43))
        let stats = receiver.stats
        #expect(stats.duplicates == 2)
        #expect(stats.malformed == 2)
        #expect(stats.packetsReceived == 3)
    }

    @Test func undecodablePayloadIsConcealed() throws {
        let receiver = try MediaReceiver(config: MediaConfig())
        let junk = RTPPacket(payloadType: MediaSender.payloadType, sequence: 1, timestamp: 0, ssrc: 1, payload: [0x03, 0x00])
        #expect(receiver.receive(rtp: junk.serialize(), nowMs: 0))
        #expect(receiver.nextFrame(nowMs: 40).count == Audio.frameSamples)
        #expect(receiver.stats.malformed == 1 && receiver.stats.framesConcealed == 1)
    }

    @Test func senderRestartStartsANewStream() throws {
        let first = try PlayoutRun().packets(ssrc: 1)
        var restarted = PlayoutRun()
        restarted.initialSequence = 40_000
        for (ssrc, label) in [(UInt32(1), "same SSRC, new sequence numbers"), (2, "new SSRC")] {
            let second = try restarted.packets(ssrc: ssrc)
            let receiver = try MediaReceiver(config: MediaConfig())
            var now: Int64 = 0
            for packet in first.prefix(20) + second.prefix(20) {
                #expect(receiver.receive(rtp: packet, nowMs: now))
                _ = receiver.nextFrame(nowMs: now)
                now += 20
            }
            for _ in 0..<4 {
                _ = receiver.nextFrame(nowMs: now)
                now += 20
            }
            let stats = receiver.stats
            #expect(stats.packetsLost == 0 && stats.packetsLate == 0, "\(label): \(stats)")
            // A new SSRC plays at once; a same-SSRC jump needs a second packet to confirm it.
            #expect(stats.framesConcealed <= 4, "\(label): \(stats)")
            #expect(stats.currentPlayoutDelayMs == 40, "\(label): \(stats)")
        }
    }

    @Test func playoutReanchorsAfterTheSenderPauses() throws {
        var run = PlayoutRun()
        run.packetCount = 60
        // The sender stops after packet 29 for one second, then carries on with the next sequence number.
        for index in 30..<60 { run.arrivals[index] = Int64(index * 20 + 1000) }
        let stats = try run.play(ticks: 120).receiver.stats
        #expect(stats.packetsLost == 0 && stats.packetsLate == 0)
        #expect(stats.currentPlayoutDelayMs == 40)
        #expect(stats.framesConcealed > 40)
    }
}
