"""AWS IoT Jobs on our own broker: the device MQTT API (``service``) and its wire shapes."""
