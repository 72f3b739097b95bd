// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "./Ownable.sol";
import {ITaskQueue} from "./Interfaces.sol";

interface INodeAvailability {
    function availableAtLeast(uint8 taskType, uint256 vram) external view returns (uint256);
}

/// @title Queue of tasks waiting for nodes, ordered by value V = fee * 1000 / estimatedMs.
/// @notice Tasks are grouped in classes (taskType, vramLimit); each class is a max-heap (dispatch) and all tasks
/// are also in one global min-heap (eviction of the lowest value when the queue is full). A heap entry is one
/// word: key = value << 64 | (2^64 - 1 - taskId), so that equal values order the older task first for dispatch
/// and the newer task first for eviction. Push, remove and eviction are O(log n); dispatch looks at the top of
/// each class (bounded by the number of distinct (taskType, vramLimit) pairs in the queue).
contract TaskQueue is Ownable, ITaskQueue {
    uint256 internal constant ID_MASK = type(uint64).max;
    uint8 internal constant TASK_TYPE_GPT = 1;

    struct Pos {
        uint32 minPos; // index + 1 in minHeap, 0 = not queued
        uint32 classPos; // index + 1 in its class heap
        uint72 class; // taskType << 64 | vramLimit
    }

    uint256[] private minHeap;
    mapping(uint256 => uint256[]) private classHeap;
    uint256[] private classes;
    mapping(uint256 => uint256) private classSlot; // index + 1 in `classes`
    mapping(uint256 => Pos) private pos;

    address public taskContract;
    INodeAvailability public nodeContract;
    uint256 public sizeLimit = 50;

    event SizeLimitUpdated(uint256 sizeLimit);

    error QueueFull();
    error NotQueued();
    error AlreadyQueued();
    error ValueTooLarge();

    modifier onlyTask() {
        if (msg.sender != taskContract) revert Unauthorized();
        _;
    }

    function setContracts(address task, address node) external onlyOwner {
        if (taskContract != address(0)) revert AlreadySet();
        if (task == address(0) || node == address(0)) revert ZeroAddress();
        taskContract = task;
        nodeContract = INodeAvailability(node);
    }

    function setSizeLimit(uint256 limit) external onlyOwner {
        sizeLimit = limit;
        emit SizeLimitUpdated(limit);
    }

    function push(uint256 taskId, uint8 taskType, uint256 vramLimit, uint256 value)
        external
        onlyTask
        returns (uint256[] memory evicted)
    {
        if (value >= 1 << 192 || taskId > ID_MASK || vramLimit > type(uint64).max) revert ValueTooLarge();
        if (pos[taskId].minPos != 0) revert AlreadyQueued();
        uint256 key = (value << 64) | (ID_MASK - taskId);
        uint256 n = minHeap.length;
        uint256 limit = sizeLimit;
        if (n >= limit) {
            if (limit == 0 || key < minHeap[0]) revert QueueFull();
            evicted = new uint256[](n - limit + 1);
            for (uint256 i = 0; i < evicted.length; ++i) {
                uint256 id = _idOf(minHeap[0]);
                _remove(id);
                evicted[i] = id;
            }
        }
        uint256 cls = (uint256(taskType) << 64) | vramLimit;
        pos[taskId].class = uint72(cls);
        uint256[] storage ch = classHeap[cls];
        if (ch.length == 0) {
            classes.push(cls);
            classSlot[cls] = classes.length;
        }
        ch.push();
        _siftUp(ch, ch.length - 1, key, true);
        minHeap.push();
        _siftUp(minHeap, minHeap.length - 1, key, false);
    }

    function remove(uint256 taskId) external onlyTask {
        _remove(taskId);
    }

    function peekBest(uint256 rootVram, uint256 groupAvailable, uint8 rootTypes) external view returns (uint256) {
        uint256 bestKey;
        uint256 len = classes.length;
        for (uint256 i = 0; i < len; ++i) {
            uint256 cls = classes[i];
            uint256 top = classHeap[cls][0];
            if (top <= bestKey) continue;
            uint256 vram = cls & ID_MASK;
            if (vram > rootVram) continue;
            uint256 taskType = cls >> 64;
            if ((rootTypes >> taskType) & 1 == 0) continue;
            if (taskType == TASK_TYPE_GPT) {
                if (groupAvailable < 3) continue;
            } else if (nodeContract.availableAtLeast(uint8(taskType), vram) < 3) {
                continue;
            }
            bestKey = top;
        }
        return bestKey == 0 ? 0 : _idOf(bestKey);
    }

    function contains(uint256 taskId) external view returns (bool) {
        return pos[taskId].minPos != 0;
    }

    function size() external view returns (uint256) {
        return minHeap.length;
    }

    /// The task that would be evicted next (lowest value), 0 if empty.
    function lowest() external view returns (uint256) {
        return minHeap.length == 0 ? 0 : _idOf(minHeap[0]);
    }

    /// The highest-value task of a class, 0 if none.
    function highest(uint8 taskType, uint256 vramLimit) external view returns (uint256) {
        uint256[] storage ch = classHeap[(uint256(taskType) << 64) | vramLimit];
        return ch.length == 0 ? 0 : _idOf(ch[0]);
    }

    function valueOf(uint256 taskId) external view returns (uint256) {
        Pos memory p = pos[taskId];
        if (p.minPos == 0) return 0;
        return minHeap[p.minPos - 1] >> 64;
    }

    // ------------------------------------------------------------------ heaps

    function _idOf(uint256 key) private pure returns (uint256) {
        return ID_MASK - (key & ID_MASK);
    }

    function _remove(uint256 taskId) private {
        Pos memory p = pos[taskId];
        if (p.minPos == 0) revert NotQueued();
        _removeAt(minHeap, p.minPos - 1, false);
        uint256[] storage ch = classHeap[p.class];
        _removeAt(ch, p.classPos - 1, true);
        delete pos[taskId];
        if (ch.length == 0) {
            uint256 cls = p.class;
            uint256 slot = classSlot[cls] - 1;
            uint256 end = classes.length - 1;
            if (slot != end) {
                uint256 moved = classes[end];
                classes[slot] = moved;
                classSlot[moved] = slot + 1;
            }
            classes.pop();
            delete classSlot[cls];
        }
    }

    function _setPos(uint256 key, bool isMax, uint256 index) private {
        Pos storage p = pos[_idOf(key)];
        if (isMax) p.classPos = uint32(index + 1);
        else p.minPos = uint32(index + 1);
    }

    function _removeAt(uint256[] storage h, uint256 i, bool isMax) private {
        uint256 lastIndex = h.length - 1;
        uint256 last = h[lastIndex];
        h.pop();
        if (i == lastIndex) return;
        uint256 old = h[i];
        if (isMax ? last > old : last < old) _siftUp(h, i, last, isMax);
        else _siftDown(h, i, last, isMax);
    }

    function _siftUp(uint256[] storage h, uint256 i, uint256 key, bool isMax) private {
        while (i > 0) {
            uint256 parent = (i - 1) >> 1;
            uint256 pk = h[parent];
            if (isMax ? pk >= key : pk <= key) break;
            h[i] = pk;
            _setPos(pk, isMax, i);
            i = parent;
        }
        h[i] = key;
        _setPos(key, isMax, i);
    }

    function _siftDown(uint256[] storage h, uint256 i, uint256 key, bool isMax) private {
        uint256 n = h.length;
        while (true) {
            uint256 c = 2 * i + 1;
            if (c >= n) break;
            uint256 ck = h[c];
            if (c + 1 < n) {
                uint256 c2 = h[c + 1];
                if (isMax ? c2 > ck : c2 < ck) {
                    c = c + 1;
                    ck = c2;
                }
            }
            if (isMax ? ck <= key : ck >= key) break;
            h[i] = ck;
            _setPos(ck, isMax, i);
            i = c;
        }
        h[i] = key;
        _setPos(key, isMax, i);
    }
}
