import Foundation
@testable import MeshDHT
import MeshIdentity
import MeshTestKit
import Testing

@Suite struct NodeIDTests {
    @Test func idIsKeccakOfPublicKeyAndEndsWithTheAddress() {
        var random = TestRandom(seed: 7)
        let key = random.key()
        let id = NodeID(publicKey: key.publicKey)
        #expect(id.bytes == Keccak.hash256(key.publicKey.uncompressed.dropFirst()))
        #expect(id.address == key.address)
        #expect(NodeID.key(for: key.address).bytes == Keccak.hash256(key.address.bytes))
    }

    @Test func bytesRoundTripAndLengthIsChecked() {
        var random = TestRandom(seed: 1)
        for _ in 0..<50 {
            let id = random.id()
            #expect(NodeID(bytes: id.bytes) == id)
        }
        #expect(NodeID(bytes: [UInt8](repeating: 0, count: 31)) == nil)
        #expect(NodeID(bytes: [UInt8](repeating: 0, count: 33)) == nil)
    }

    @Test func distanceIsXorAndOrdersLikeBytes() {
        var random = TestRandom(seed: 2)
        for _ in 0..<100 {
            let a = random.id(), b = random.id()
            #expect(a.distance(to: b).bytes == zip(a.bytes, b.bytes).map { $0 ^ $1 })
            #expect(a.distance(to: b) == b.distance(to: a))
            #expect(a.distance(to: a).leadingZeroBits == 256)
            #expect((a < b) == a.bytes.lexicographicallyPrecedes(b.bytes))
        }
        let one = NodeID(bytes: [UInt8](repeating: 0, count: 31) + [1])!
        #expect(one.leadingZeroBits == 255)
        let top = NodeID(bytes: [0x80] + [UInt8](repeating: 0, count: 31))!
        #expect(top.leadingZeroBits == 0)
    }

    @Test func randomIDsFallInTheirBucketAndBucketRangesAreExact() {
        var random = TestRandom(seed: 3)
        let me = random.id()
        for bucket in [255, 254, 200, 129, 128, 127, 64, 63, 1, 0] {
            let range = me.bucketRange(bucket)
            #expect(me.bucketIndex(of: range.lowerBound) == bucket)
            #expect(me.bucketIndex(of: range.upperBound) == bucket)
            for _ in 0..<20 {
                let id = me.randomID(inBucket: bucket, using: &random.rng)
                #expect(me.bucketIndex(of: id) == bucket)
                #expect(range.contains(id))
            }
        }
        #expect(me.bucketIndex(of: me) == nil)
    }

    @Test func codableAsHex() throws {
        var random = TestRandom(seed: 4)
        let id = random.id()
        let data = try JSONEncoder().encode([id])
        #expect(String(decoding: data, as: UTF8.self) == "[\"\(id.hex)\"]")
        #expect(try JSONDecoder().decode([NodeID].self, from: data) == [id])
    }
}

@Suite struct EndpointTests {
    @Test func parsesAndPrintsIPv4AndIPv6() {
        #expect(endpoint("1.2.3.4:5").description == "1.2.3.4:5")
        #expect(endpoint("1.2.3.4:5").ip == [1, 2, 3, 4])
        #expect(endpoint("[::1]:4460").description == "[::1]:4460")
        #expect(endpoint("[2001:DB8:0:0::7]:80").description == "[2001:db8::7]:80")
        #expect(endpoint("[::ffff:1.2.3.4]:9").description == "1.2.3.4:9")
        for bad in ["", "1.2.3.4", "1.2.3.4:", "1.2.3.4:70000", "1.2.3:5", "[::1:5", "::1:5", "[1.2.3.4]:5", "host:5", "[::1]5"] {
            #expect(DHTEndpoint(parsing: bad) == nil, "\(bad)")
        }
        #expect(DHTEndpoint(ip: [1, 2, 3], port: 1) == nil)
    }

    @Test func prefixLimitsCountSlash24AndSlash48AndExemptLocalAddresses() {
        for local in ["127.0.0.1:1", "10.1.2.3:1", "172.16.0.1:1", "172.31.9.9:1", "192.168.1.1:1", "169.254.0.1:1",
                      "[::1]:1", "[fc00::1]:1", "[fd12::1]:1", "[fe80::1]:1", "[::ffff:10.0.0.1]:1"] {
            #expect(endpoint(local).limitedPrefix == nil, "\(local)")
        }
        #expect(endpoint("8.8.8.8:1").limitedPrefix == endpoint("8.8.8.200:9").limitedPrefix)
        #expect(endpoint("8.8.8.8:1").limitedPrefix != endpoint("8.8.9.8:1").limitedPrefix)
        #expect(endpoint("172.32.0.1:1").limitedPrefix != nil)
        #expect(endpoint("[2001:db8:1::1]:1").limitedPrefix == endpoint("[2001:db8:1:ffff::2]:1").limitedPrefix)
        #expect(endpoint("[2001:db8:1::1]:1").limitedPrefix != endpoint("[2001:db8:2::1]:1").limitedPrefix)
        #expect(endpoint("[fec0::1]:1").limitedPrefix != nil)
    }

    @Test func codableAsText() throws {
        let contact = Contact(id: NodeID(bytes: [UInt8](repeating: 0xab, count: 32))!, endpoint: endpoint("[fe80::1]:7"))
        let data = try JSONEncoder().encode(contact)
        #expect(try JSONDecoder().decode(Contact.self, from: data) == contact)
        #expect(String(decoding: data, as: UTF8.self).contains("\"[fe80::1]:7\""))
    }
}
