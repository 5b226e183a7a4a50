@testable import MeshDaemon
import Testing

/// The pure parts of direct paths (docs/calls.md, "Direct paths"): ICE messages sealed under the call's key, and the
/// window that drops the second copy of a packet that came over both paths.
@Suite struct DirectPathTests {
    private let key = IceKey(callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 2, count: 30))

    @Test func iceMessagesRoundTripUnderTheCallKey() {
        let messages: [IceSignal.Body] = [
            .credentials(ufrag: "ab12", password: "a-password-of-22-chars"),
            .candidate("a=candidate:2 1 UDP 1679819007 198.18.0.101 53777 typ srflx raddr 10.1.0.2 rport 53777"),
            .endOfCandidates, .fallback,
        ]
        for (index, body) in messages.enumerated() {
            let signal = IceSignal(fromCaller: index % 2 == 0, generation: UInt32(index + 1), body: body)
            #expect(key.open(key.seal(signal)) == signal)
        }
    }

    /// Another call's key, one flipped bit anywhere, or a truncated message: dropped (the node counts `iceBadMac`).
    @Test func aWrongKeyOrAlteredMessageIsRefused() {
        let sealed = key.seal(IceSignal(fromCaller: true, generation: 7, body: .candidate("a=candidate:1 1 UDP 2 10.0.0.1 5 typ host")))
        let other = IceKey(callerToCallee: Array(repeating: 1, count: 30), calleeToCaller: Array(repeating: 3, count: 30))
        #expect(other.open(sealed) == nil)
        for index in sealed.indices {
            var altered = sealed
            altered[index] ^= 0x01
            #expect(key.open(altered) == nil, "bit flipped at \(index)")
        }
        #expect(key.open(Array(sealed.dropLast())) == nil)
        #expect(key.open([]) == nil)
    }

    @Test func theSequenceWindowDropsCopiesNotNewPackets() {
        var window = SequenceWindow()
        #expect(!window.contains(100))
        window.insert(100)
        #expect(window.contains(100))
        #expect(!window.contains(101) && !window.contains(99))
        window.insert(102)
        #expect(window.contains(100) && window.contains(102) && !window.contains(101))
        window.insert(101)
        #expect(window.contains(101))
        // Far ahead: the old numbers leave the window (libsrtp's own replay check covers what is older).
        window.insert(102 &+ 64)
        #expect(!window.contains(102) && window.contains(102 &+ 64))
        // Across the 16-bit wrap.
        var wrap = SequenceWindow()
        wrap.insert(65_534)
        wrap.insert(1)
        #expect(wrap.contains(65_534) && wrap.contains(1) && !wrap.contains(0) && !wrap.contains(65_535))
    }
}
