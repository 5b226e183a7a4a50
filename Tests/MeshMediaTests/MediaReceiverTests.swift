import MeshMedia
import Testing

/// Drives a sender and a receiver on a virtual clock: packet k is sent at 20·k ms and arrives then unless
/// `arrivals` says otherwise or it is `lost`; the receiver ticks every 20 ms, taking arrivals up to and
/// including the tick first.
struct PlayoutRun {
    /// DTX off; the adaptive buffer starts at 20 ms (one packet), what it converges to on these arrivals.
    var config: MediaConfig = {
        var config = MediaConfig()
        config.dtx = false
        config.playoutTargetMs = 20
        return config
    }()
    var packetCount = 50
    var initialSequence: UInt16 = 0
    var initialTimestamp: UInt32 = 0
    var arrivals: [Int: Int64] = [:]
    var lost: Set<Int> = []

    func arrival(of index: Int) -> Int64? {
        lost.contains(index) ? nil : arrivals[index] ?? Int64(index * Audio.frameMs)
    }

    func packets(ssrc: UInt32 = 7) throws -> [[UInt8]] {
        let sender = try MediaSender(config: config, ssrc: ssrc, initialSequence: initialSequence,
                                     initialTimestamp: initialTimestamp)
        let audio = TestAudio.sine(hz: 330, count: packetCount * Audio.frameSamples)
        return try TestAudio.frames(audio).compactMap { try sender.packetize(frame: $0) }
    }

    /// Ticks until the last packet has played: the adaptive buffer starts at once (its initial target less one
    /// packet), a fixed one after its delay.
    var ticksToPlayAll: Int {
        switch config.playout {
        case .adaptive: packetCount
        case .fixed(let ms): packetCount + ms / Audio.frameMs
        }
    }

    /// The frames played over `ticks` ticks (by default until the last packet has played), and the receiver.
    func play(ticks: Int? = nil) throws -> (frames: [[Int16]], receiver: MediaReceiver) {
        let packets = try packets()
        let schedule = packets.indices.compactMap { index in arrival(of: index).map { (index, $0) } }
            .sorted { $0.1 < $1.1 }
        let receiver = try MediaReceiver(config: config)
        var frames: [[Int16]] = []
        var next = 0
        for tick in 0..<(ticks ?? ticksToPlayAll) {
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

    @Test func inOrderPacketsPlayWithLittleDelay() throws {
        let (frames, receiver) = try PlayoutRun().play()
        let stats = receiver.stats
        #expect(stats.packetsReceived == 50)
        #expect(stats.packetsLost == 0 && stats.packetsLate == 0 && stats.duplicates == 0)
        #expect(stats.framesConcealed == 0 && stats.fecRecovered == 0 && stats.malformed == 0)
        #expect(stats.meanPlayoutDelayMs <= 40, "\(stats)")
        #expect(stats.jitterMs == 0)
        #expect(frames[1..<50].allSatisfy { TestAudio.energy($0) > 1_000_000 })
    }

    @Test func fixedBufferHoldsItsTarget() throws {
        var run = PlayoutRun()
        run.config.playout = .fixed(ms: 60)
        let stats = try run.play().receiver.stats
        #expect(stats.meanPlayoutDelayMs == 60 && stats.currentPlayoutDelayMs == 60, "\(stats)")
        #expect(stats.decisions.accelerate == 0 && stats.decisions.decelerate == 0)
    }

    @Test func singleLossIsRecoveredByFEC() throws {
        var run = PlayoutRun()
        run.config.playout = .fixed(ms: 40)
        run.lost = [20]
        let (frames, receiver) = try run.play()
        let stats = receiver.stats
        #expect(stats.packetsLost == 1)
        #expect(stats.fecRecovered == 1)
        #expect(stats.framesConcealed == 0)
        #expect(frames[3..<50].allSatisfy { TestAudio.energy($0) > 1_000_000 })
    }

    @Test func adaptiveBufferRecoversALossByFEC() throws {
        var run = PlayoutRun()
        run.lost = [20]
        let stats = try run.play(ticks: 51).receiver.stats
        // The packet after the lost one arrives by the lost one's turn (the buffer holds its target), so its FEC
        // data rebuilds it with nothing concealed and no delay added.
        #expect(stats.packetsLost == 1 && stats.fecRecovered == 1, "\(stats)")
        #expect(stats.framesConcealed == 0 && stats.currentPlayoutDelayMs <= 40, "\(stats)")
    }

    @Test func adaptiveBufferWaitsForALatePacketOnALossFreePath() throws {
        var run = PlayoutRun()
        for index in 20..<50 { run.arrivals[index] = Int64(index * Audio.frameMs + 50) }
        let stats = try run.play(ticks: 54).receiver.stats
        // From packet 20 on the path is 50 ms slower: nothing is lost, so the buffer conceals while it waits
        // and then plays every packet, late ones included, instead of dropping them.
        #expect(stats.packetsLost == 0 && stats.packetsLate == 0 && stats.fecRecovered == 0, "\(stats)")
        #expect(stats.framesConcealed >= 1 && stats.packetsReceived == 50, "\(stats)")
    }

    @Test func burstIsConcealed() throws {
        var run = PlayoutRun()
        run.config.playout = .fixed(ms: 40)
        run.lost = [20, 21, 22]
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLost == 3)
        // Slots 20 and 21 are concealed; slot 22 takes its FEC copy from packet 23.
        #expect(stats.framesConcealed == 2, "\(stats)")
        #expect(stats.fecRecovered == 1)

        run.config.fec = false
        let withoutFEC = try run.play().receiver.stats
        #expect(withoutFEC.framesConcealed == 3 && withoutFEC.fecRecovered == 0)
    }

    @Test func latePacketIsCountedAndDropped() throws {
        var run = PlayoutRun()
        run.config.playout = .fixed(ms: 40)
        run.arrivals[20] = 20 * 20 + 70  // its slot played at 440 ms
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLate == 1)
        #expect(stats.packetsLost == 0)
        #expect(stats.fecRecovered == 1)
        #expect(stats.packetsReceived == 50)
    }

    @Test func reorderingWithinTheTargetIsHandled() throws {
        var run = PlayoutRun()
        run.config.playout = .fixed(ms: 40)
        run.arrivals[0] = 5  // the stream's first packet overtaken by the second
        run.arrivals[1] = 0
        run.arrivals[20] = 20 * 21 + 5
        run.arrivals[21] = 20 * 21
        run.arrivals[30] = 20 * 30 + 35
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLate == 0 && stats.packetsLost == 0, "\(stats)")
        #expect(stats.framesConcealed == 0 && stats.fecRecovered == 0)
        #expect(stats.jitterMs > 0)
    }

    @Test func sequenceNumbersAndTimestampsWrap() throws {
        var run = PlayoutRun()
        run.config.playout = .fixed(ms: 40)
        run.initialSequence = 65_520
        run.initialTimestamp = UInt32.max - 960 * 10
        run.lost = [20]  // sequence 4, after the wrap
        let stats = try run.play().receiver.stats
        #expect(stats.packetsLost == 1 && stats.fecRecovered == 1)
        #expect(stats.framesConcealed == 0 && stats.packetsLate == 0, "\(stats)")
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
        // Opus code 3 with a frame count of zero: not an Opus packet.
        let junk = RTPPacket(payloadType: MediaSender.payloadType, sequence: 1, timestamp: 0, ssrc: 7, payload: [0x03, 0x00])
        #expect(!receiver.receive(rtp: junk.serialize(), nowMs: 44))
        let stats = receiver.stats
        #expect(stats.duplicates == 2)
        #expect(stats.malformed == 3)
        #expect(stats.packetsReceived == 3)
    }

    @Test func senderRestartStartsANewStream() throws {
        let first = try PlayoutRun().packets(ssrc: 1)
        var restarted = PlayoutRun()
        restarted.initialSequence = 40_000
        restarted.initialTimestamp = 123_456_789
        for (ssrc, label) in [(UInt32(1), "same SSRC, new sequence numbers"), (2, "new SSRC")] {
            let second = try restarted.packets(ssrc: ssrc)
            let receiver = try MediaReceiver(config: restarted.config)
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
            // A new SSRC plays at once; a same-SSRC jump needs a second packet to confirm it (one frame of
            // waiting), and the four ticks after the last packet are concealed.
            #expect(stats.framesConcealed <= 5, "\(label): \(stats)")
            #expect(stats.currentPlayoutDelayMs <= 40, "\(label): \(stats)")
        }
    }

    @Test func playoutCarriesOnAfterTheSenderPauses() throws {
        var run = PlayoutRun()
        run.packetCount = 60
        // The sender stops after packet 29 for one second, then carries on with the next sequence number and a
        // timestamp one second later.
        for index in 30..<60 { run.arrivals[index] = Int64(index * 20 + 1000) }
        let receiver = try MediaReceiver(config: run.config)
        let packets = try run.packets()
        var now: Int64 = 0
        for tick in 0..<130 {
            now = Int64(tick * 20)
            for (index, packet) in packets.enumerated() where run.arrival(of: index).map({ $0 > now - 20 && $0 <= now }) == true {
                let header = RTPPacket(parsing: packet)!
                var moved = header
                if index >= 30 { moved.timestamp &+= 48_000 }
                _ = receiver.receive(rtp: moved.serialize(), nowMs: now)
            }
            _ = receiver.nextFrame(nowMs: now)
        }
        let stats = receiver.stats
        #expect(stats.packetsLost == 0 && stats.packetsLate == 0, "\(stats)")
        #expect(stats.currentPlayoutDelayMs <= 60, "\(stats)")
    }
}
